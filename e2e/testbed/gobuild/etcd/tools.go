//go:build tools

// Package tools pins the etcd server so `go mod tidy` keeps it in this wrapper module;
// build.sh builds go.etcd.io/etcd/server/v3 (the etcd binary) from here.
package tools

import _ "go.etcd.io/etcd/server/v3"
