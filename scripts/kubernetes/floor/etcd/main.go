// etcd for the test environment, built from the etcd server module at the version that
// Kubernetes itself pins (see go.mod), exactly as etcd's own main package starts it.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
