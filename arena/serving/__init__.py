"""Models behind one protocol: engines load weights and stream, a worker serves one model as an OpenAI-compatible
HTTP server, the supervisor starts and watches workers, and the client talks to any such server."""
