"""First-party plugins of pg_mmretrieval (installed as ``pg_mmretrieval_plugins``).

They are loaded through the ``pg_mmretrieval`` entry-point group, exactly like third-party
plugins.
"""
