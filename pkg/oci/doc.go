// Package oci parses the pull side of the OCI distribution API strictly: request
// paths, repository names, tags, digests and the `ns` registry host. Everything a
// client sends is checked here before any store, peer or upstream sees it.
package oci
