raise ImportError("hub_broken needs the 'frobnicate' package, which is not installed")
