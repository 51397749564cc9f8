"""The claims engine (``engine``), its two families (``paper``, ``axes``) and ``catalog``, the
one module that imports both families and writes ``claims.csv``."""
