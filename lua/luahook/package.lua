--[[
luahook/package.lua - require() per package root.

A package root is a folder whose own modules its code requires: the folder of the handler
scripts (its modules in ROOT/lib/, which is never loaded as handlers), and later a recipe's
folder (its modules beside recipe.lua, lua/luahook/recipes.lua). src/vm.c runs this chunk
once per VM with a function that finds a file compiled into the binary (a bundled recipe's
modules live there); it returns install(env, dir, key, templates?, globals?, bundled?),
which gives an environment its own `require` and `package`:

  require(name) looks in, in order,
    1. the root's cache, then package.loaded (the shared stdlib: json, log, http, ...)
    2. package.preload[name]
    3. the root's own modules: ROOT/lib/?.lua, ROOT/lib/?/init.lua (the templates); for a
       bundled root, the embedded files BUNDLED/<template> instead
    4. package.path (Debian's /usr/share/lua/5.4/?.lua: lua-penlight, ...)
    5. package.cpath, then its all-in-one form (Debian's lua-lpeg, lua-cjson, ...)
  and fails naming every place it looked, as Lua's own require does.

- Each root has its own cache: two roots' `util` are two modules, loaded once per root
  (a script and the modules of its root share them). The stdlib stays shared.
- Each script has its own `package` table (path, cpath copied; loaded is its root's cache;
  the rest read through to the shared one): a script that changes package.path changes it
  for its own require only.
- A module runs in an environment of its own, as a script does: its globals fall back to
  the shared ones, and its require and package are its root's, plus the root's `globals`
  (a recipe instance's modules see the instance's `store`).
]]

local embedded = ...
local shared = package
local searchpath, loadlib = package.searchpath, package.loadlib
local fmt = string.format

local roots = {} -- key (the folder) -> root

local function new_package(root)
  return setmetatable({
    path = shared.path,
    cpath = shared.cpath,
    loaded = root.loaded,
  }, { __index = shared })
end

-- The C loader of `file` for `name`, as Lua's searcher_C names it: luaopen_ and the name
-- with '.' as '_', after an "x-" prefix (tried first without it, then with).
local function c_loader(file, name)
  local open = name:gsub("%.", "_")
  local mark = open:find("-", 1, true)
  if mark then
    local f = loadlib(file, "luaopen_" .. open:sub(1, mark - 1))
    if f then return f end
    open = open:sub(mark + 1)
  end
  return loadlib(file, "luaopen_" .. open)
end

local make_require

-- Runs the module file `file` in an environment of its own whose require is the root's.
local function lua_loader(root)
  return function(name, file)
    local env = setmetatable({ require = root.require, package = root.package },
                             { __index = _G })
    for k, v in pairs(root.globals or {}) do env[k] = v end
    local chunk, err
    if root.bundled then
      chunk, err = load(embedded("recipes/" .. file:sub(9)), "@" .. file, "t", env)
    else
      chunk, err = loadfile(file, "bt", env)
    end
    if not chunk then
      error(fmt("error loading module '%s' from file '%s':\n\t%s", name, file, err), 0)
    end
    return chunk(name, file)
  end
end

function make_require(root, pkg)
  local run_lua = lua_loader(root)
  return function(name)
    if type(name) ~= "string" then
      error(fmt("bad argument #1 to 'require' (string expected, got %s)",
                name == nil and "no value" or type(name)), 2)
    end
    local loaded = pkg.loaded
    local v = loaded[name]
    if v ~= nil then return v end
    local tried = {}
    local loader, data
    local pre = pkg.preload
    if type(pre) == "table" and pre[name] ~= nil then
      loader, data = pre[name], ":preload:"
    else
      tried[#tried + 1] = fmt("no field package.preload['%s']", name)
    end
    local file, e
    if not loader and root.bundled then
      local rel = name:gsub("%.", "/")
      for t in root.templates:gmatch("[^;]+") do
        local p = root.bundled .. "/" .. t:gsub("%?", rel)
        if embedded(p) then loader, data = run_lua, "bundled:" .. p:gsub("^recipes/", "") break end
        tried[#tried + 1] = fmt("no bundled file '%s'", p)
      end
    elseif not loader then
      file, e = searchpath(name, root.path)
      if file then loader, data = run_lua, file else tried[#tried + 1] = e end
    end
    if not loader then
      if type(pkg.path) ~= "string" then error("'package.path' must be a string", 2) end
      file, e = searchpath(name, pkg.path)
      if file then loader, data = run_lua, file else tried[#tried + 1] = e end
    end
    if not loader then
      if type(pkg.cpath) ~= "string" then error("'package.cpath' must be a string", 2) end
      file, e = searchpath(name, pkg.cpath)
      if file then
        local f, lerr = c_loader(file, name)
        if not f then
          error(fmt("error loading module '%s' from file '%s':\n\t%s", name, file, lerr), 2)
        end
        loader, data = f, file
      else
        tried[#tried + 1] = e
      end
    end
    if not loader then
      local head = name:match("^([^.]+)%.")
      if head then
        file, e = searchpath(head, pkg.cpath)
        if file then
          local f = c_loader(file, name)
          if f then loader, data = f, file
          else tried[#tried + 1] = fmt("no module '%s' in file '%s'", name, file) end
        else
          tried[#tried + 1] = e
        end
      end
    end
    if not loader then
      local msg = fmt("module '%s' not found:\n\t%s", name, table.concat(tried, "\n\t"))
      -- a module beside the scripts is a script: say where modules go
      local beside = root.beside and searchpath(name, root.beside)
      if beside then
        msg = msg .. fmt("\n\t(%s is loaded as a handler script: a module goes in %s/)",
                         beside, root.lib)
      end
      error(msg, 2)
    end
    local r = loader(name, data)
    if r ~= nil then
      rawset(loaded, name, r)
    elseif rawget(loaded, name) == nil then
      rawset(loaded, name, true)
    end
    return rawget(loaded, name), data
  end
end

-- The root of the folder `dir`, made on first use. `key` tells two spellings of one
-- folder apart from two folders (the caller passes its real path).
local function root_of(dir, key, templates, globals, bundled)
  local root = roots[key]
  if root then return root end
  local prefix = (dir == "" and "." or dir):gsub("/+$", "")
  if prefix == "" then prefix = "/" end
  local paths = {}
  for t in (templates or "lib/?.lua;lib/?/init.lua"):gmatch("[^;]+") do
    paths[#paths + 1] = (prefix == "/" and "" or prefix) .. "/" .. t
  end
  root = {
    path = table.concat(paths, ";"),
    loaded = setmetatable({}, { __index = shared.loaded }),
    templates = templates,
    globals = globals,
    bundled = bundled,
  }
  if templates == nil then
    root.lib = prefix .. "/lib"
    root.beside = prefix .. "/?.lua"
  end
  root.package = new_package(root)
  root.require = make_require(root, root.package)
  roots[key] = root
  return root
end

-- Gives `env` (a script's environment) its own require and package, rooted at `dir`.
return function(env, dir, key, templates, globals, bundled)
  local root = root_of(dir, key or dir, templates, globals, bundled)
  local pkg = new_package(root)
  rawset(env, "package", pkg)
  rawset(env, "require", make_require(root, pkg))
end
