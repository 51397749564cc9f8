"""asv suite of subquad: scaling exponents per commit (README, "Scaling history with asv")."""
