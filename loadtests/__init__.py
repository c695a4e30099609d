"""Load and cold-start measurement for the penguin API: Locust users, shapes, reports."""
