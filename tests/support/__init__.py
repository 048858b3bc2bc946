"""Real servers on 127.0.0.1 for the tests: uvicorn apps and misbehaving raw TCP peers."""
