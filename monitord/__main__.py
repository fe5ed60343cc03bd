"""Allow ``python -m monitord``."""

from monitord.edge.cli import main

raise SystemExit(main())
