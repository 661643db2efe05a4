"""Small helpers with no isolate concept of their own: size units, path
prefixes, /proc/self/mountinfo, lazy package attributes."""
