"""Reward adapters for RL trainers: TRL (:mod:`.trl`) and verl (:mod:`.verl`).

Neither imports its trainer: each matches the call signature that project documents,
so a trainer can call it without this package depending on the trainer.
"""
