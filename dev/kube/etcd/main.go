// A minimal etcd entry point: etcd's own server module cannot be `go install`ed because its
// go.mod replace directives are ignored for dependents, so the local stack builds this instead.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
