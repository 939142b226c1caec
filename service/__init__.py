"""The Commons Users API service: HTTP endpoints and the domain code the consumer shares."""
