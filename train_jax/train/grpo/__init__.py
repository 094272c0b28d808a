"""Group relative policy optimisation (GRPO) with a task's verifiable reward.

objective.py (advantages, clipped surrogate, k3 KL), rewards.py (task scorer calls that never
kill a run), prompts.py (the task's prompts and the resumable order they are drawn in),
rollout.py (the Flax sampler jitted on the mesh; rollouts -> update rows), step.py (jitted
log-prob and update steps), loop.py (`train_grpo`), plots.py (the reward curve).
"""
