"""The machine performance model: t = o + W/F + B/BW(S) per phase (docs/MACHINE_MODEL.md)."""
