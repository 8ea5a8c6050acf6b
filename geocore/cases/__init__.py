"""Cases, not single photos: several photos of one place (`joint`) and the calibration of their joint answers on
labelled photo sets (`set_calibration`), a claimed location to check (`claims`), and video clips (`clip`), all
built on `geocore.locate` and the search regions of `geocore.uncertainty`."""
