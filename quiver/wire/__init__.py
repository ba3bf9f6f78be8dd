"""Conversions between the quiver.v1 protobuf messages and Quiver's domain types, with request validation."""
