"""Beam PTransforms and DoFns, one concern per module."""
