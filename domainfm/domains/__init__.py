"""Domain plugins: ``medical3d``, ``geospatial`` and ``audio``, each one folder."""
