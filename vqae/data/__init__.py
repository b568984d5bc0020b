"""Reading BigEarthNet patches: band facts, discovery, raw loaders, resampling, splits, staging."""
