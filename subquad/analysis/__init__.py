"""The analysis layer: results schema, fits, verdicts, figures, reports, checks and gates."""
