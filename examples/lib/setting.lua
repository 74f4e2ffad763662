-- setting(name [, default]): the environment variable `name`, or `default` when it is
-- unset or empty (an empty VAR= in an env file means "not set" to these examples).
return function(name, default)
  local v = env(name, "")
  if v == "" then return default end
  return v
end
