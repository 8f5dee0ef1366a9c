"""Entry point: ``python app.py [--host H] [--port P] ...`` is the same as ``python -m arena``."""
from arena.app import serve

if __name__ == "__main__":
    serve()
