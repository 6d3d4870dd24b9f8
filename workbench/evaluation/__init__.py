"""The evaluation wing: scoring, the quality guard, sweeps and their files, selection,
and the train → validation → select → test protocol.

Imports the root and the model, vectors and steering wings.
"""
