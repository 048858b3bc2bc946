"""Retry policies, throttle budgets and circuit breakers, free of any HTTP framework."""
