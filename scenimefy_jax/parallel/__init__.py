"""Machinery every stage shares to run on many devices and hosts: the data-parallel device mesh
(`mesh`) and the multi-host start-up (`distributed`). Nothing is imported eagerly."""
