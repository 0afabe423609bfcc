"""Presenters: each wires one part of the main window's widgets to its controller, so window.py keeps only wiring."""
