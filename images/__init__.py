"""Container images of the project: catalog (names, paths, keys) and build (buildah driver)."""
