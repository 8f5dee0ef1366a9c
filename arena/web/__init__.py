"""The Gradio page and its HTTP guard: layout (page), behaviour as plain functions (handlers), pure renderers
(render), the JSON API (api), and what keeps a visitor's browser safe (safe_markdown, http_guard, access)."""
