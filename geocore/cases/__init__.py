"""Cases, not single photos: several photos of one place (`joint`), a claimed location to check (`claims`),
and video clips (`video`), all built on `geocore.locate` and the search regions of `geocore.uncertainty`."""
