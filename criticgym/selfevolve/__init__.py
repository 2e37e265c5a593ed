"""SELF: learning from feedback in words (meta-skill records, the objective, the self-evolution loop, the driver)."""
