"""Datasets on disk: the reference's file format and the command-line generator."""
