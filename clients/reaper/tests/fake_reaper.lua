-- A fake REAPER for the tests: the `reaper` and `gfx` tables a ReaScript sees, over a small simulated
-- project (tracks, items, takes, sources, the time selection, ExtState), recording what the script does.
--
-- It is strict where REAPER would misbehave silently: an API function it does not know, an unknown
-- parameter name, an undo block closed twice, or a project change outside any undo block are recorded
-- (unknown functions raise). Processes are real: ExecProcess runs its command line through /bin/sh,
-- in the background for the no-wait modes, so the script under test starts the real program.
-- reaper.defer queues callbacks that `Fake:loop` runs cycle by cycle, sleeping a tick between cycles.

local Fake = {}
Fake.__index = Fake

local TICK = 0.05   -- seconds between defer cycles (real sleep, and the simulated clock's step)

local function sh_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

local function sleep(seconds)
  os.execute("sleep " .. seconds)
end

-------------------------------------------------------------------------------------------------
-- The project model
-------------------------------------------------------------------------------------------------

local function new_source(spec)
  return { kind = "PCM_source", file = spec.file or "", type = spec.source_type or "WAVE",
    length = spec.source_length or 0 }
end

local function new_item(fake, track, spec)
  local item = { kind = "MediaItem", track = track, position = spec.position or 0, length = spec.length or 0,
    selected = spec.selected or false, takes = {}, active = nil }
  if spec.take then
    local t = spec.take
    local take = { kind = "MediaItem_Take", item = item, name = t.name or "", startoffs = t.startoffs or 0,
      playrate = t.playrate or 1, source = new_source(t) }
    item.takes[1] = take
    item.active = take
  end
  return item
end

function Fake.new(scenario)
  local self = setmetatable({}, Fake)
  self.scenario = scenario
  self.clock = 1000.0
  self.tracks = {}
  for _, t in ipairs(scenario.tracks or {}) do
    local track = { kind = "MediaTrack", name = t.name or "", items = {} }
    for _, spec in ipairs(t.items or {}) do track.items[#track.items + 1] = new_item(self, track, spec) end
    self.tracks[#self.tracks + 1] = track
  end
  local ts = scenario.time_selection
  self.time_selection = ts and { ts[1], ts[2] } or { 0, 0 }
  self.extstate = {}
  for key, value in pairs(scenario.extstate or {}) do
    self.extstate[key] = { value = value, persist = true }
  end
  self.dialog_answers = scenario.dialogs or {}
  self.msgbox_answers = scenario.msgbox_answers or {}
  self.events = scenario.events or {}
  -- records
  self.calls = {}
  self.called = {}
  self.messages = {}
  self.dialogs = {}
  self.undo = {}
  self.undo_depth = 0
  self.ui_refresh = 0
  self.changes_outside_undo = {}
  self.exec = {}
  self.errors = {}
  self.progress_texts = {}
  self.gfx_inits = 0
  self.gfx_quits = 0
  self.instances = {}
  self.current = nil
  self.cycles = 0
  self.reaper = self:make_reaper()
  self.gfx = self:make_gfx()
  return self
end

-- The API functions the script used, each once, in the order of first use.
function Fake:record(name)
  if not self.called[name] then
    self.called[name] = true
    self.calls[#self.calls + 1] = name
  end
end

function Fake:change(what)
  if self.undo_depth <= 0 then self.changes_outside_undo[#self.changes_outside_undo + 1] = what end
end

function Fake:track_index(track)
  for i, t in ipairs(self.tracks) do
    if t == track then return i end
  end
  return nil
end

function Fake:selected_items()
  local list = {}
  for _, track in ipairs(self.tracks) do
    for _, item in ipairs(track.items) do
      if item.selected then list[#list + 1] = item end
    end
  end
  return list
end

local function expect(kind, value, fname)
  if type(value) ~= "table" or value.kind ~= kind then
    error(string.format("fake reaper: %s expects a %s, got %s", fname, kind, tostring(value)), 3)
  end
end

-------------------------------------------------------------------------------------------------
-- reaper.*
-------------------------------------------------------------------------------------------------

function Fake:make_reaper()
  local fake = self
  local api = {}

  function api.CountSelectedMediaItems(proj)
    return #fake:selected_items()
  end

  function api.GetSelectedMediaItem(proj, index)
    return fake:selected_items()[index + 1]
  end

  function api.GetActiveTake(item)
    expect("MediaItem", item, "GetActiveTake")
    return item.active
  end

  function api.TakeIsMIDI(take)
    expect("MediaItem_Take", take, "TakeIsMIDI")
    return take.source.type == "MIDI"
  end

  function api.GetMediaItemTake_Source(take)
    expect("MediaItem_Take", take, "GetMediaItemTake_Source")
    return take.source
  end

  function api.GetMediaSourceType(source, buf)
    expect("PCM_source", source, "GetMediaSourceType")
    return source.type
  end

  function api.GetMediaSourceFileName(source, buf)
    expect("PCM_source", source, "GetMediaSourceFileName")
    return source.file
  end

  function api.GetMediaSourceLength(source)
    expect("PCM_source", source, "GetMediaSourceLength")
    return source.length, false
  end

  local item_keys = { D_POSITION = "position", D_LENGTH = "length" }
  function api.GetMediaItemInfo_Value(item, key)
    expect("MediaItem", item, "GetMediaItemInfo_Value")
    local field = item_keys[key] or error("fake reaper: GetMediaItemInfo_Value key " .. tostring(key) .. " not simulated", 2)
    return item[field]
  end

  function api.SetMediaItemInfo_Value(item, key, value)
    expect("MediaItem", item, "SetMediaItemInfo_Value")
    local field = item_keys[key] or error("fake reaper: SetMediaItemInfo_Value key " .. tostring(key) .. " not simulated", 2)
    fake:change("SetMediaItemInfo_Value " .. key)
    item[field] = value
    return true
  end

  local take_keys = { D_STARTOFFS = "startoffs", D_PLAYRATE = "playrate" }
  function api.GetMediaItemTakeInfo_Value(take, key)
    expect("MediaItem_Take", take, "GetMediaItemTakeInfo_Value")
    local field = take_keys[key] or error("fake reaper: GetMediaItemTakeInfo_Value key " .. tostring(key) .. " not simulated", 2)
    return take[field]
  end

  function api.GetSetMediaItemTakeInfo_String(take, key, value, set)
    expect("MediaItem_Take", take, "GetSetMediaItemTakeInfo_String")
    if key ~= "P_NAME" then error("fake reaper: take string " .. tostring(key) .. " not simulated", 2) end
    if set then
      fake:change("take P_NAME")
      take.name = value
    end
    return true, take.name
  end

  function api.GetSet_LoopTimeRange(is_set, is_loop, start, stop, seek)
    if is_set then fake.time_selection = { start, stop } end
    return fake.time_selection[1], fake.time_selection[2]
  end

  function api.GetMediaItem_Track(item)
    expect("MediaItem", item, "GetMediaItem_Track")
    return item.track
  end

  function api.GetMediaTrackInfo_Value(track, key)
    expect("MediaTrack", track, "GetMediaTrackInfo_Value")
    if key == "I_FOLDERDEPTH" then return track.folder_depth or 0 end
    if key ~= "IP_TRACKNUMBER" then error("fake reaper: track value " .. tostring(key) .. " not simulated", 2) end
    return fake:track_index(track) or 0
  end

  function api.SetMediaTrackInfo_Value(track, key, value)
    expect("MediaTrack", track, "SetMediaTrackInfo_Value")
    if key ~= "I_FOLDERDEPTH" then error("fake reaper: SetMediaTrackInfo_Value key " .. tostring(key) .. " not simulated", 2) end
    fake:change("SetMediaTrackInfo_Value " .. key)
    track.folder_depth = value
    return true
  end

  function api.GetSetMediaTrackInfo_String(track, key, value, set)
    expect("MediaTrack", track, "GetSetMediaTrackInfo_String")
    if key ~= "P_NAME" then error("fake reaper: track string " .. tostring(key) .. " not simulated", 2) end
    if set then
      fake:change("track P_NAME")
      track.name = value
    end
    return true, track.name
  end

  function api.CountTracks(proj)
    return #fake.tracks
  end

  function api.GetTrack(proj, index)
    return fake.tracks[index + 1]
  end

  function api.InsertTrackAtIndex(index, want_defaults)
    fake:change("InsertTrackAtIndex")
    index = math.max(0, math.min(math.floor(index), #fake.tracks))
    table.insert(fake.tracks, index + 1, { kind = "MediaTrack", name = "", items = {} })
  end

  function api.ValidatePtr2(proj, pointer, kind)
    if kind == "MediaTrack*" then return fake:track_index(pointer) ~= nil end
    error("fake reaper: ValidatePtr2 for " .. tostring(kind) .. " not simulated", 2)
  end

  function api.AddMediaItemToTrack(track)
    expect("MediaTrack", track, "AddMediaItemToTrack")
    fake:change("AddMediaItemToTrack")
    local item = new_item(fake, track, {})
    track.items[#track.items + 1] = item
    return item
  end

  function api.AddTakeToMediaItem(item)
    expect("MediaItem", item, "AddTakeToMediaItem")
    fake:change("AddTakeToMediaItem")
    local take = { kind = "MediaItem_Take", item = item, name = "", startoffs = 0, playrate = 1,
      source = new_source({}) }
    item.takes[#item.takes + 1] = take
    item.active = item.active or take
    return take
  end

  function api.PCM_Source_CreateFromFile(path)
    if not file_exists(path) then return nil end
    return new_source({ file = path })
  end

  function api.SetMediaItemTake_Source(take, source)
    expect("MediaItem_Take", take, "SetMediaItemTake_Source")
    expect("PCM_source", source, "SetMediaItemTake_Source")
    fake:change("SetMediaItemTake_Source")
    take.source = source
    return true
  end

  function api.Undo_BeginBlock()
    fake.undo_depth = fake.undo_depth + 1
    fake.undo[#fake.undo + 1] = { kind = "begin" }
  end

  function api.Undo_EndBlock(desc, flags)
    if fake.undo_depth <= 0 then fake.errors[#fake.errors + 1] = "Undo_EndBlock without Undo_BeginBlock" end
    fake.undo_depth = fake.undo_depth - 1
    fake.undo[#fake.undo + 1] = { kind = "end", desc = desc, flags = flags }
  end

  function api.PreventUIRefresh(n)
    fake.ui_refresh = fake.ui_refresh + n
  end

  function api.UpdateArrange() end
  function api.TrackList_AdjustWindows(minor) end
  function api.Main_OnCommand(command, flag) end

  function api.ShowMessageBox(text, title, kind)
    fake.messages[#fake.messages + 1] = { text = text, title = title, type = kind }
    local answer = table.remove(fake.msgbox_answers, 1)
    return answer or 1
  end

  function api.GetUserInputs(title, n, captions, shown)
    local fields, separator = {}, ","
    for caption in (captions .. ","):gmatch("(.-),") do
      local sep = caption:match("^separator=(.)$")
      if sep then
        separator = sep
      elseif not caption:match("^extrawidth=") then
        fields[#fields + 1] = caption
      end
    end
    if #fields ~= n then error(string.format("fake reaper: GetUserInputs got %d captions for %d fields", #fields, n), 2) end
    local values, from = {}, 1
    while #values < n do
      local at = shown:find(separator, from, true)
      values[#values + 1] = shown:sub(from, (at or 0) - 1)
      if not at then break end
      from = at + 1
    end
    fake.dialogs[#fake.dialogs + 1] = { title = title, captions = fields, shown = values }
    local answer = table.remove(fake.dialog_answers, 1)
    if answer == nil or answer == "cancel" then return false, "" end
    local out = {}
    for i = 1, n do
      local a = answer[i]
      if a == nil or a == false then a = values[i] or "" end
      out[i] = a
    end
    return true, table.concat(out, separator)
  end

  function api.GetExtState(section, key)
    local e = fake.extstate[section .. "/" .. key]
    return e and e.value or ""
  end

  function api.HasExtState(section, key)
    return fake.extstate[section .. "/" .. key] ~= nil
  end

  function api.SetExtState(section, key, value, persist)
    fake.extstate[section .. "/" .. key] = { value = value, persist = persist and true or false }
  end

  function api.DeleteExtState(section, key, persist)
    fake.extstate[section .. "/" .. key] = nil
  end

  function api.ExecProcess(cmd, timeout)
    fake.exec[#fake.exec + 1] = { cmd = cmd, timeout = timeout }
    if timeout < 0 then
      os.execute(cmd .. " >/dev/null 2>&1 &")
      return ""
    end
    local pipe = io.popen(cmd .. " 2>&1; echo \"exit:$?\"")
    local out = pipe:read("a")
    pipe:close()
    local body, code = out:match("^(.-)exit:(%d+)%s*$")
    return code .. "\n" .. body
  end

  function api.defer(fn)
    local inst = fake.current or error("fake reaper: defer outside a script instance", 2)
    inst.queue[#inst.queue + 1] = fn
  end

  function api.atexit(fn)
    local inst = fake.current or error("fake reaper: atexit outside a script instance", 2)
    inst.atexit[#inst.atexit + 1] = fn
  end

  function api.time_precise()
    return fake.clock
  end

  function api.GetProjectPath(buf)
    return fake.scenario.project_path
  end

  function api.GetResourcePath()
    return fake.scenario.resource_path or fake.scenario.project_path
  end

  function api.GetOS()
    return "Other"
  end

  function api.file_exists(path)
    return file_exists(path)
  end

  function api.RecursiveCreateDirectory(path, ignored)
    os.execute("mkdir -p " .. sh_quote(path))
    return 1
  end

  local listings = {}
  function api.EnumerateFiles(path, index)
    if index < 0 then
      listings[path] = nil
      return nil
    end
    if not listings[path] then
      local names = {}
      local pipe = io.popen("ls -A " .. sh_quote(path) .. " 2>/dev/null")
      for line in pipe:lines() do names[#names + 1] = line end
      pipe:close()
      listings[path] = names   -- REAPER caches a folder's listing too
    end
    return listings[path][index + 1]
  end

  return setmetatable({}, {
    __index = function(_, name)
      local fn = api[name]
      if not fn then error("fake reaper: reaper." .. tostring(name) .. " is not simulated", 2) end
      return function(...)
        fake:record(name)
        return fn(...)
      end
    end,
    __newindex = function() error("fake reaper: the reaper table is read-only", 2) end,
  })
end

-------------------------------------------------------------------------------------------------
-- gfx.*
-------------------------------------------------------------------------------------------------

function Fake:make_gfx()
  local fake = self
  local g = { w = 0, h = 0, x = 0, y = 0, mouse_x = 0, mouse_y = 0, mouse_cap = 0 }
  fake.window_open = false
  fake.pending_chars = {}
  fake.cancel_label_at = nil

  function g.init(name, w, h)
    fake.gfx_inits = fake.gfx_inits + 1
    fake.window_open = true
    g.w, g.h = w or 400, h or 200
    return 1
  end

  function g.quit()
    fake.gfx_quits = fake.gfx_quits + 1
    fake.window_open = false
  end

  function g.getchar()
    if not fake.window_open then return -1 end
    return table.remove(fake.pending_chars, 1) or 0
  end

  function g.drawstr(text)
    if text == "Cancel" then fake.cancel_label_at = { g.x, g.y } end
    if text:match("%d+%%") then
      local last = fake.progress_texts[#fake.progress_texts]
      if last ~= text:match("%d+%%") then fake.progress_texts[#fake.progress_texts + 1] = text:match("%d+%%") end
    end
  end

  function g.measurestr(text) return 7 * #text, 14 end
  function g.set() end
  function g.rect() end
  function g.setfont() end
  function g.update() end
  for name, fn in pairs(g) do
    if type(fn) == "function" then
      g[name] = function(...)
        fake:record("gfx." .. name)
        return fn(...)
      end
    end
  end
  return setmetatable(g, {
    __index = function(_, name) error("fake reaper: gfx." .. tostring(name) .. " is not simulated", 2) end,
  })
end

-------------------------------------------------------------------------------------------------
-- Script instances and the defer loop
-------------------------------------------------------------------------------------------------

-- Runs the script's main chunk as a new instance (its own globals, the shared reaper and gfx).
function Fake:run_instance(path, globals)
  local env = setmetatable({}, { __index = _G })
  for k, v in pairs(globals or {}) do env[k] = v end
  local inst = { queue = {}, atexit = {}, alive = true, id = #self.instances + 1 }
  self.instances[#self.instances + 1] = inst
  local chunk, err = loadfile(path, "t", env)
  if not chunk then error(err) end
  self.current = inst
  local ok, result = xpcall(chunk, debug.traceback)
  self.current = nil
  if not ok then self.errors[#self.errors + 1] = "main chunk: " .. tostring(result) end
  inst.result = ok and result or nil
  if not ok or #inst.queue == 0 then self:end_instance(inst) end
  return inst
end

function Fake:end_instance(inst)
  if not inst.alive then return end
  inst.alive = false
  inst.queue = {}
  self.current = inst
  for _, fn in ipairs(inst.atexit) do
    local ok, err = xpcall(fn, debug.traceback)
    if not ok then self.errors[#self.errors + 1] = "atexit: " .. tostring(err) end
  end
  self.current = nil
end

function Fake:fire_events(script)
  for _, ev in ipairs(self.events) do
    if not ev.fired then
      local ready = (ev.when_file and file_exists(ev.when_file)) or (ev.after_cycles and self.cycles >= ev.after_cycles)
      if ev.action == "click_cancel" and not self.cancel_label_at then ready = false end   -- nothing drawn yet
      if ready then
        ev.fired = true
        if ev.action == "escape" then
          self.pending_chars[#self.pending_chars + 1] = 27
        elseif ev.action == "close" then
          self.window_open = false
        elseif ev.action == "click_cancel" then
          local at = self.cancel_label_at
          self.gfx.mouse_x, self.gfx.mouse_y, self.gfx.mouse_cap = at[1] + 2, at[2] + 2, 1
          ev.release_at = self.cycles + 1
        elseif ev.action == "rerun" then
          self:run_instance(script)
        elseif ev.action == "terminate" then   -- REAPER's "terminate instance" answer to a re-run
          for _, inst in ipairs(self.instances) do self:end_instance(inst) end
        else
          error("fake reaper: unknown event action " .. tostring(ev.action))
        end
      end
    elseif ev.release_at and self.cycles >= ev.release_at then
      self.gfx.mouse_cap = 0
      ev.release_at = nil
    end
  end
end

-- Runs defer cycles until every instance has ended, or `timeout` simulated seconds have passed.
function Fake:loop(script, timeout)
  local started = self.clock
  while true do
    self:fire_events(script)
    local alive = false
    for _, inst in ipairs(self.instances) do
      if inst.alive then
        local queue = inst.queue
        inst.queue = {}
        self.current = inst
        for _, fn in ipairs(queue) do
          local ok, err = xpcall(fn, debug.traceback)
          if not ok then
            self.errors[#self.errors + 1] = "deferred: " .. tostring(err)
            inst.queue = {}
            break
          end
        end
        self.current = nil
        if #inst.queue == 0 then self:end_instance(inst) else alive = true end
      end
    end
    if not alive then return true end
    if self.clock - started > timeout then
      self.errors[#self.errors + 1] = string.format("still running after %g s", timeout)
      for _, inst in ipairs(self.instances) do self:end_instance(inst) end
      return false
    end
    sleep(TICK)
    self.clock = self.clock + TICK
    self.cycles = self.cycles + 1
  end
end

-------------------------------------------------------------------------------------------------
-- The report, as JSON
-------------------------------------------------------------------------------------------------

local function json(value)
  local t = type(value)
  if t == "nil" then return "null"
  elseif t == "boolean" then return tostring(value)
  elseif t == "number" then
    if value ~= value or value == math.huge or value == -math.huge then return "null" end
    return string.format("%.17g", value)
  elseif t == "string" then
    return '"' .. value:gsub('[%c"\\]', function(c)
      local named = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
      return named[c] or string.format("\\u%04x", c:byte())
    end) .. '"'
  elseif t == "table" then
    if next(value) == nil then return value.__object and "{}" or "[]" end
    if #value > 0 then
      local parts = {}
      for _, v in ipairs(value) do parts[#parts + 1] = json(v) end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    local keys = {}
    for k in pairs(value) do if k ~= "__object" then keys[#keys + 1] = tostring(k) end end
    table.sort(keys)
    local parts = {}
    for _, k in ipairs(keys) do parts[#parts + 1] = json(k) .. ":" .. json(value[k]) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  error("cannot encode " .. t)
end

function Fake:report()
  local tracks = {}
  for _, track in ipairs(self.tracks) do
    local items = {}
    for _, item in ipairs(track.items) do
      local takes = {}
      for _, take in ipairs(item.takes) do
        takes[#takes + 1] = { name = take.name, file = take.source.file, startoffs = take.startoffs }
      end
      items[#items + 1] = { position = item.position, length = item.length, takes = takes }
    end
    tracks[#tracks + 1] = { name = track.name, items = items, folder_depth = track.folder_depth or 0 }
  end
  local extstate = { __object = true }
  for k, v in pairs(self.extstate) do extstate[k] = v end
  return json({
    __object = true,
    errors = self.errors,
    messages = self.messages,
    dialogs = self.dialogs,
    tracks = tracks,
    undo = self.undo,
    undo_depth = self.undo_depth,
    ui_refresh = self.ui_refresh,
    changes_outside_undo = self.changes_outside_undo,
    extstate = extstate,
    exec = self.exec,
    calls = self.calls,
    progress = self.progress_texts,
    gfx = { __object = true, inits = self.gfx_inits, quits = self.gfx_quits, open = self.window_open },
    cycles = self.cycles,
  })
end

return Fake
