// argocd-lua SCRIPT < OBJECT.json: runs an Argo CD health script the way Argo CD does, for
// tests/gitops.rs. Argo CD embeds gopher-lua (Lua 5.1) and gives a custom health script only
// the package, base, table and a restricted os library (no string, no math), with the live
// object as the global `obj` and one second to finish; the script returns a table whose
// `status` and `message` are strings. Prints {"status": ..., "message": ...}.
//
// The os library is left out here altogether: a health check has no use for the clock.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
)

func main() {
	if len(os.Args) != 2 {
		fail("usage: argocd-lua SCRIPT < OBJECT.json")
	}
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail(err.Error())
	}
	var obj any
	if err := json.NewDecoder(os.Stdin).Decode(&obj); err != nil {
		fail("object: " + err.Error())
	}

	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}} {
		l.Push(l.NewFunction(lib.open))
		l.Push(lua.LString(lib.name))
		l.Call(1, 0)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(string(script)); err != nil {
		fail(err.Error())
	}

	hs, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		fail(fmt.Sprintf("the script returned a %s, not a table", l.Get(-1).Type()))
	}
	out := map[string]string{}
	for _, key := range []string{"status", "message"} {
		switch v := hs.RawGetString(key).(type) {
		case lua.LString:
			out[key] = string(v)
		case *lua.LNilType:
		default:
			fail(fmt.Sprintf("hs.%s is a %s, not a string", key, v.Type()))
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail(err.Error())
	}
}

// toLua converts decoded JSON as Argo CD converts the live object: objects and arrays become
// tables (arrays indexed from 1), numbers LNumber, null nil.
func toLua(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []any:
		t := l.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(v))
		for key, item := range v {
			t.RawSetString(key, toLua(l, item))
		}
		return t
	}
	return lua.LNil
}

func fail(message string) {
	fmt.Fprintln(os.Stderr, "argocd-lua:", message)
	os.Exit(1)
}
