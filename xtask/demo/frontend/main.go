// frontend: the demo's entry service. /checkout calls the backend twice over HTTP.
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
)

func call(url string) (int, error) {
	res, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	io.Copy(io.Discard, res.Body)
	return res.StatusCode, nil
}

func main() {
	backend := "http://127.0.0.1:" + os.Args[2]
	mux := http.NewServeMux()
	mux.HandleFunc("/checkout", func(w http.ResponseWriter, r *http.Request) {
		if _, err := call(backend + "/price?sku=odiglet-mug"); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		status, err := call(backend + "/stock?sku=odiglet-mug")
		if err != nil || status != http.StatusOK {
			http.Error(w, "stock unavailable", http.StatusBadGateway)
			return
		}
		fmt.Fprint(w, "ordered\n")
	})
	mux.HandleFunc("/broken", func(w http.ResponseWriter, r *http.Request) {
		call(backend + "/stock")
		http.Error(w, "backend refused", http.StatusBadGateway)
	})
	addr := "127.0.0.1:" + os.Args[1]
	if err := http.ListenAndServe(addr, mux); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
