"""The testbed's pod runner: pods of this project's images on the kwok node run as local processes.

Start it with `python -m e2e.testbed.pod_runner` (done by `python -m e2e.testbed up`).
"""
