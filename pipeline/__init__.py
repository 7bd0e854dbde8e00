"""Orchestration above the simulator and the reports: sweeps (``sweep``, ``sweepfile``) run the
pipeline end to end — traces built, points simulated, results written — on a process pool or a
Dask cluster. No package below imports it; ``cli`` fronts it."""
