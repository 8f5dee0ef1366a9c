"""Local LLM arena: compare two local models side by side. ``build_chatbot`` is the Python API."""


def build_chatbot(*args, **kwargs):
    """See arena.chatbot.build_chatbot (imported lazily: the web app does not need torch)."""
    from arena.chatbot import build_chatbot as build
    return build(*args, **kwargs)
