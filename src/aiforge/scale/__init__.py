"""Scale-out (Ray Serve replicas, Ray Data batch jobs) of any bundle: filled in by the Ray issue."""
