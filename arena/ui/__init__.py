"""The Gradio page (page.py), its behaviour as plain functions (handlers.py), pure renderers
(render.py) and the JSON API (api.py)."""
from .page import CSS, build_ui

__all__ = ["CSS", "build_ui"]
