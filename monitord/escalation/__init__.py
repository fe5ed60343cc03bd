"""The level 1/2/3 ladders: the pure state machine (:mod:`.ladder`), the guards that hold it
(blast radius, ...), quarantine, and the engine that wires them to results, the store and the
drivers."""
