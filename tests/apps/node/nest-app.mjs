// NestJS's first-steps app (AppModule, AppController, AppService, main.ts)
// in plain JavaScript: what `nest build` makes of it, with the decorators
// applied by hand instead of by the TypeScript compiler, and no line for
// hotswap. NestJS 12 is an ES module package, as its compiled apps are.
import 'reflect-metadata';
import { Controller, Get, Injectable, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';

class AppService {
  getHello() {
    return `Hello from NestJS pid=${process.pid} v=${process.env.APP_VERSION}\n`;
  }
}
Injectable()(AppService);

class AppController {
  constructor(appService) {
    this.appService = appService;
  }

  getHello() {
    return this.appService.getHello();
  }
}
// What `emitDecoratorMetadata` writes for `constructor(private readonly
// appService: AppService)`: Nest's injector reads it.
Reflect.defineMetadata('design:paramtypes', [AppService], AppController);
Get()(AppController.prototype, 'getHello', Object.getOwnPropertyDescriptor(AppController.prototype, 'getHello'));
Controller()(AppController);

class AppModule {}
Module({ controllers: [AppController], providers: [AppService] })(AppModule);

async function bootstrap() {
  const app = await NestFactory.create(AppModule);
  app.enableShutdownHooks();
  await app.listen(process.env.PORT ?? 3000);
}
bootstrap();
