"""Engines turn a model entry into a streaming chat generator: llama.cpp, transformers (INT4 by torchao or
quanto), ITREX in its own virtualenv and vLLM in its own. ``base`` holds the protocol every engine implements;
``registry`` says how each is prepared, loaded and run, and is the one place that names them all."""
