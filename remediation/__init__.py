"""Remediation: power drivers (IPMI, SNMP PDU), SSH actions and, later, pagers."""
