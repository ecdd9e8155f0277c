-- The key's connections on every live relay.
return presence()
