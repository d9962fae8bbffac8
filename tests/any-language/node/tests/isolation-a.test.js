require('../lib/isolation')('a', 3)
