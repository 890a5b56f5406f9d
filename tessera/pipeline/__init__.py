"""The layers that join the lower ones: embedding into a store (`embed_store`: inference +
store). Nothing below this package imports it."""
