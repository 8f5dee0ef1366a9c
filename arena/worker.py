"""``python -m arena.worker``: serve one model of the catalog as an OpenAI-compatible HTTP server.

The worker lives in ``arena/serving/worker.py``; this entry point stays so the documented command (a worker on
another machine, README "Models on another machine") keeps working."""
from arena.serving.worker import main

if __name__ == "__main__":
    main()
