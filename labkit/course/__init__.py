"""Layer 11, course: notebook tooling (execute, learner copies), the doctor, the command line.
"""
