"""Observer service: venue clients, local books, discovery, the tick loop and publishing."""
