"""What is kept: the database (store), FastChat-compatible battle lines and the exports built from them."""
