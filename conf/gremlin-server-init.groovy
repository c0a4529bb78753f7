// Binds the traversal source `g` that gremlinpython's DriverRemoteConnection addresses.
def globals = [:]
globals << [g : traversal().withEmbedded(graph)]
