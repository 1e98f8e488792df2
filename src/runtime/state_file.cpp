// placeholder until the runtime layer lands
