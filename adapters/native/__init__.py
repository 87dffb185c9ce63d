"""Array handling per framework (numpy <-> native, devices, blocking, input checks),
shared by the matched backend and the peer backends of that framework. Each module
imports its framework at import time; import it only from a backend that needs it."""
