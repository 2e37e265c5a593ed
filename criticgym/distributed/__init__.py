"""Beyond one process: Ray actors that are rebuilt when they die, rollout workers, and critic pools."""
