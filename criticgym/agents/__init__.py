"""Learners and searchers (PPO, REINFORCE/RLOO, the stable-baselines3 adapter, RAIN, SELF) as they land."""
